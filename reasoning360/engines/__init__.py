"""Engines run the training stages. `local` is built in; `verl_*` drive verl on GPUs."""
