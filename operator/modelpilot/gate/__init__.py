"""Go/no-go gate: replay labeled production requests and test non-inferiority, paired.

Import the submodules (`spec`, `stats`, `replay`): the package loads nothing itself, so the pure
rollout core can read a gate step without loading the replay client.
"""
