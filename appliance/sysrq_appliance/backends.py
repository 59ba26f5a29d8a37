"""The names of the firewall backends, in one place, for config (which every command, `send`
included, imports: so nothing heavy here) and for the firewall package."""

NFT, LEGACY = "nft", "legacy"
BACKENDS = (NFT, LEGACY)   # what firewall.backend takes besides "auto"
