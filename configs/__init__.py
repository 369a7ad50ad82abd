"""gsd's configs: one module per experiment with `get_config(arg)`; shared blocks in `common`.

Run one with `python -m gsd.main --config=configs/NAME.py[:ARG]`; `:smoke` is every config's
seconds-long CPU variant. Variants import the config they extend (`from configs import toy_1shot`).
"""
