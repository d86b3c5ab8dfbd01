"""Turn a search space into measured latencies: exports per runtime, targets (host or phone),
the resumable measurement protocol, `python -m profiler.run`, and `python -m profiler.deploy`
(export a trained network and time the file on a target).

Library entry points live in `profiler.api` (`profile_space`, `measure_archs`); importing this
package stays light (no exporter is imported until a runtime is asked for)."""
