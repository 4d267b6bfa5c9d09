"""The example configs, shipped with the package as `quantbench.configs` so that an installed
quantbench runs them by name (`quantbench run quick`, `quantbench configs`)."""
