"""The orders room: the recharge order life cycle and settlement (lifecycle), order-API platforms (platforms)."""
