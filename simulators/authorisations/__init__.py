"""Simulator of the register of authorisations: powers of attorney from orphans' courts and
notaries, for the people who apply on behalf of a child's parents."""
