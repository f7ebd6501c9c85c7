"""Numeric feature kernels over NumPy arrays (numba where it pays). No I/O.

Every streaming feature has a batch twin; tests prove they agree on the same data.
Modules: ``vpin``, ``ofi``, ``hawkes``, ``kyle``, ``trend`` (ER, KAMA, ATR, z-score,
realised vol), ``perp_state`` (funding/basis/OI state).
"""
