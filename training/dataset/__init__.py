"""Phase 1 of the mission: the ZANTARA training dataset.

Sources (seed bank and its variations, corrections, imported conversations, synthetic questions) go
through the review checklist (`checks`) and a leak-free split (`split`) into a versioned folder
(`build`); `cli` holds the `zantara dataset` commands.
"""
