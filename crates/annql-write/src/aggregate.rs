//! A group-by aggregate of a matrix written as an AnnData, in the layout of
//! `scanpy.get.aggregate`: obs are the groups with their key columns, var is the source's var, each
//! statistic is a layer named by its function, `X` is empty unless one statistic is copied there.
