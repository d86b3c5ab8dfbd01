"""Runner shims: the command lines and output formats of the device runners, on the host.

`benchmark_model` (TFLite/LiteRT) and `executor_runner` (ExecuTorch) are installed into the
loopback device as scripts that import these modules; they parse the same flags, print the same
output and time models through the loopback runtime worker.
"""
