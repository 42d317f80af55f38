"""Exact TreeSHAP and the bitvector tree scorer."""
