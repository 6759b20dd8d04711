"""The ledger verification a platform needs: C2SP tlog-tiles (tiles, Merkle proofs), signed
notes and checkpoints, and ledger entries with their commitments. The carrier's ledger
(``pipelines.ledger``) writes with these same modules."""
