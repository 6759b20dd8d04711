"""Unit tests. Test kits that several packages' tests share (``lifecycle_testkit``) live in this
folder; pytest's default import mode puts the folder of this conftest on ``sys.path``."""
