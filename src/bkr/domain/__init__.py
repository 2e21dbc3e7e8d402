"""The pure rules of the broker program: money, periods, tiers, payout, fills.

Nothing here touches a database, the network, the clock or the environment.
"""
