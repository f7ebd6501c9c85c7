"""Numeric feature kernels over NumPy arrays (numba where it pays). No I/O.

Every streaming feature has a batch twin sharing its numba step; tests prove they agree
exactly on the same data. Modules: ``vpin`` (VPIN with BVC / tick-rule / aggressor
classification), ``ofi`` (order-flow imbalance), ``kyle`` (Kyle's lambda), ``hawkes``
(exponential Hawkes intensity, MLE, simulator), ``book`` (order-book imbalance and its
aggregates), ``trend`` (ER, KAMA, ATR, z-score, realised vol), ``perp_state``
(funding/basis/OI state).
"""
