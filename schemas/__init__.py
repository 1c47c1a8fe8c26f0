"""Run configs and the verdict and registry row contracts with their Arrow schemas."""
