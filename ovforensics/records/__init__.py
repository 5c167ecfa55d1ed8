"""The one contract between the scanner and every writer: :class:`~ovforensics.records.record.Change`
(one typed record per finding), :class:`LayerRef` and the change/via kinds.

May import: nothing
"""
