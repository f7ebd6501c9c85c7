"""Pure risk functions: margin brackets and liquidation price, pre-trade safeguards.

No I/O here (ARCHITECTURE): every check is a function of numbers and value types.
"""
