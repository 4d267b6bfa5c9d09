"""Running a sweep on a device: the cases a config expands to (cases.py), the sweep and its run
folder (sweep.py), one case's steps (case.py), the timing engine (timing.py), the host's time per
call (host_time.py), and the machine's state and ceilings (device.py, gpu_monitor.py,
environment.py, calibration.py, datasheets.py)."""
