"""Replicating the paper's Figures 4 (LSTM on IMDB) and 6 (RNN-RBM on Nottingham) as resumable grids.

Along the data flow: `specs` (what a grid is), `grid` (running it: FIM once per protocol and seed, then
every run through the one training loop), `backends` (the two models: which data, which metrics),
`runs` (reading the logs back), `plots` and `report` (figures and REPLICATION.md), `__main__` (the
command line).
"""
