"""Turn a search space into measured latencies: exports per runtime, targets (host or phone),
the resumable measurement protocol, and `python -m profiler.run`.

Library entry points live in `profiler.api` (`profile_space`, `measure_archs`); importing this
package stays light (no exporter is imported until a runtime is asked for)."""
