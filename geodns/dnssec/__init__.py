"""DNSSEC: keys, signatures and denial of existence, made when a snapshot is built."""
