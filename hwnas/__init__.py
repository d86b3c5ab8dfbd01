"""hwnas: the `hwnas` command (`hwnas.cli`) and the command-line vocabulary every command shares
(`hwnas.flags`).

Nothing is imported here: `hwnas.flags` sits below every other package (each CLI imports it),
while `hwnas.cli` sits above them all (it dispatches to their `main`s).
"""
