"""Text formats reidd reads and writes, each with its reader and writer in one module.

* :mod:`reidd.formats.mot`  MOTChallenge tracks and detections (``frame,id,x,y,w,h,conf,...``);
* :mod:`reidd.formats.mtmc` AI City MTMC (``camera_id obj_id frame_id x y w h -1 -1``).

A new output format goes here: a module with ``format_line``/a writer (a tracklet sink) and a reader that
names the file and line of a malformed line.
"""
