"""Device-targeted architecture search driven by per-device latency LUTs.

    search.space        blocks, spaces, archs, ops (pure data and modules)
    search.latency      a LUT as a [layers × blocks] latency tensor (µs), differentiable
    search.supernet     mixed ops that run only the paths a strategy needs
    search.strategies   fbnet, proxyless, darts, evolution, random behind one protocol
    search.data         embedded digits, CIFAR-10/100 (python pickle), image folders streamed
                        through a DataLoader, per-family augmentation
    search.precision    mixed precision, channels-last and deterministic kernels on cuda
    search.run          `python -m search.run`: LUT + data → arch.json, log.csv, θ plots
    search.sweep        `python -m search.sweep`: one search per target / β / λ → pareto.csv
    search.training     training a found arch from scratch: the recipe's config, the shapes to
                        train at, the loop (checkpoints, resume, torchrun)
    search.train        `python -m search.train`: the command that trains a found arch
                        (`search.training`), exports it and times it through the profiler's CLI
    search.checkpoint   training checkpoints and the per-epoch metrics file
    search.distributed  data-parallel pieces for torchrun runs (training and, later, search)
    search.profiler_client  `python -m profiler.deploy` as a subprocess; LUT prediction vs measurement
"""
