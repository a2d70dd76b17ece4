-- Q3: pseudobulk: sum of layers/counts per (donor_id, cell_type) for every gene; zero sums omitted.
-- Aggregates on (obs columns, var_id) and attaches gene names afterwards.
WITH s AS (SELECT o.donor_id, o.cell_type, c.var_id, sum(c.value) AS total
           FROM atlas.layers_counts c JOIN atlas.obs o USING (obs_id)
           GROUP BY o.donor_id, o.cell_type, c.var_id)
SELECT s.donor_id, s.cell_type, v.var_name AS gene, s.total AS "sum"
FROM s JOIN atlas.var v USING (var_id)
WHERE s.total <> 0;
