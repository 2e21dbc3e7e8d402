"""Double-entry bookkeeping for what the program pays: posting groups that sum to zero per
currency, entries that are never changed, corrections as reversing groups, balances as sums."""
