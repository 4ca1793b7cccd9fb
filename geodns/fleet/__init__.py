"""A fleet of nodes that acts as one, through etcd: shared configuration and
zones (:mod:`geodns.fleet.source`), each node's status and health votes
under its lease (:mod:`geodns.fleet.member`), publishing and listing
(:mod:`geodns.fleet.publish`).  See docs/fleet.md."""
