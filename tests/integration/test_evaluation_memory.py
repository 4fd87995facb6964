"""Re-ID evaluation at scale: a large query x gallery evaluation stays within its memory bound (chunked
distance), measured in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from support import ROOT


def test_bounded_memory_on_a_large_evaluation() -> None:
    nq, ng, chunk = 3000, 20_000, 100
    full_mb = nq * ng * 4 / 2**20  # the float32 distance matrix alone: 229 MB
    script = textwrap.dedent(
        f"""
        import json, resource, numpy as np
        from reidd.evaluate.metrics import evaluate
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(1500, 64)).astype(np.float32)
        gp, qp = rng.integers(0, 1500, {ng}), rng.integers(0, 1500, {nq})
        gf = centres[gp] + 1.5 * rng.normal(size=({ng}, 64)).astype(np.float32)
        qf = centres[qp] + 1.5 * rng.normal(size=({nq}, 64)).astype(np.float32)
        gc, qc = rng.integers(0, 5, {ng}), rng.integers(0, 5, {nq})
        evaluate(qf[:50], gf[:500], gp[:50], gp[:500], qc[:50], gc[:500], progress=False)  # warm-up
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r = evaluate(qf, gf, qp, gp, qc, gc, chunk_size={chunk}, progress=False)
        grow = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(json.dumps({{"grow_mb": grow / 1024, "valid": r.num_valid, "mAP": r.mAP}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["valid"] > 2500 and 0.0 < res["mAP"] < 1.0
    assert res["grow_mb"] < 0.25 * full_mb, res
