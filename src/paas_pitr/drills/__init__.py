"""Restore drills: every pro and standard addon restored on a schedule into a throwaway
cluster, checked, and deleted, with its RTO recorded (:mod:`.service`, :mod:`.scheduler`,
records in :mod:`.store`)."""
