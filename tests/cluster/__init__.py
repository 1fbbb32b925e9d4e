"""The cluster tier: several real daemons in one consumer group share the work, and the
jobs of one that dies, stops or freezes go on elsewhere (docs/cluster-design.md 7.2)."""
