"""Paper trading: a live session that shares replay's strategies and fills (issue 6, in progress).

So far: `state.TradeState`, the session journal that a crash cannot lose.
"""
