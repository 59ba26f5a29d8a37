"""sysrq-appliance: fire a magic SysRq key on a hung server through an IPsec tunnel."""

__version__ = "0.1.0"
