from tests.no_torch import run_without_torch


def test_blocker_really_blocks_torch():
    proc = run_without_torch(
        """
        try:
            import torch
        except ImportError as exc:
            print("blocked:", exc)
        else:
            raise SystemExit("torch imported")
        """
    )
    assert "blocked" in proc.stdout
