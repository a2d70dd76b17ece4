-- Q2: mean of X for one gene per cell_type, zeros included.
-- x_dense counts every cell of the group (absent entries as 0); the fused aggregation reads only
-- the gene's entries (its column of a CSC copy of X when the store has one).
SELECT o.cell_type, avg(d.value) AS mean_x
FROM atlas.x_dense d JOIN atlas.obs o USING (obs_id) JOIN atlas.var v USING (var_id)
WHERE v.var_name = ${q2_gene}
GROUP BY o.cell_type;
