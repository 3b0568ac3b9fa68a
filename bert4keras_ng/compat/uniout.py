"""No-op stand-in for the ``uniout`` module bert4keras imported to print Chinese on Python 2.

Python 3 prints unicode strings and containers of them as they are, so importing this module
changes nothing.
"""
