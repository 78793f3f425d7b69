"""Where results live: run folders written by a fit and the checksummed workspace."""
