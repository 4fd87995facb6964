"""`reidd events tail` refuses bad input naming it (no server needed)."""

from __future__ import annotations

from reidd.events.tail import main as tail_main


def test_tail_bad_input(tmp_path, capsys):
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text("cameras:\n  - id: c1\n    url: missing.mp4\n")
    assert tail_main(["events", "tail", "--config", str(cfg)]) == 2
    assert "--redis-url" in capsys.readouterr().err
    assert tail_main(["events", "tail", "--redis-url", "http://x", "--count", "1"]) == 2
    assert "--redis-url" in capsys.readouterr().err
    assert tail_main(["events", "tail", "--redis-url", "redis://127.0.0.1:1", "--group", "g"]) == 2
    assert "--consumer" in capsys.readouterr().err
