-- Q5: dot-plot statistics for marker genes x every cell_type: mean of X and fraction of cells with
-- X > 0, both over every cell of the type (zeros included: the x_dense view), as one fused pass.
SELECT o.cell_type, v.var_name AS gene, avg(d.value) AS mean_x,
       count(*) FILTER (WHERE d.value > 0) * 1.0 / count(*) AS frac_pos
FROM atlas.x_dense d JOIN atlas.obs o USING (obs_id) JOIN atlas.var v USING (var_id)
WHERE v.var_name IN (${markers})
GROUP BY o.cell_type, v.var_name;
