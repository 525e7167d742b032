"""``FaultProxy``: the fault-injecting S3 test proxy (now ``s3proxy.FaultProxy``).

Kept so ``from faultproxy import FaultProxy`` goes on working; see tests/s3proxy/.
"""

from s3proxy.faults import ALL_KINDS, FAULT_KINDS, FaultProxy

__all__ = ["ALL_KINDS", "FAULT_KINDS", "FaultProxy"]
