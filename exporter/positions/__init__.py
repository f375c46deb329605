"""Positions and carry risk: configured or account positions, liquidation distance, funding accrual."""
