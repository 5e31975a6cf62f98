"""The compression techniques as data: each one's frozen config (what plan.json stores),
torch-free."""
