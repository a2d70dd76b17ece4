-- Q6: top 20 genes by total counts among the cells of one cell_type (ties by gene name).
WITH t AS (SELECT c.var_id, sum(c.value) AS total
           FROM atlas.layers_counts c JOIN atlas.obs o USING (obs_id)
           WHERE o.cell_type = ${q6_cell_type}
           GROUP BY c.var_id)
SELECT v.var_name AS gene, t.total
FROM t JOIN atlas.var v USING (var_id)
ORDER BY t.total DESC, gene
LIMIT 20;
