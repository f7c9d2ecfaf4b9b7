"""medaudit: medical-insurance fund supervision (医保基金智能审核与监控)."""

__version__ = "0.1.0"
