-- Q4: cells of one tissue: total counts and number of genes with counts > 0 (0 for cells with no entries).
-- The inner join makes the tissue's cells a row selection on the counts scan.
WITH cells AS (SELECT obs_id, obs_name FROM atlas.obs WHERE tissue = ${q4_tissue}),
     s AS (SELECT c.obs_id, sum(c.value) AS total, count(*) FILTER (WHERE c.value > 0) AS n
           FROM atlas.layers_counts c JOIN cells USING (obs_id)
           GROUP BY c.obs_id)
SELECT cells.obs_name AS barcode, coalesce(s.total, 0) AS total_counts, coalesce(s.n, 0) AS n_genes
FROM cells LEFT JOIN s USING (obs_id);
