-- Stored entries of X: answered from indptr (no chunk of data/indices is read).
SELECT count(*) AS nnz FROM atlas.x;
