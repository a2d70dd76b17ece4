-- Q5: dot-plot statistics for marker genes x every cell_type: mean of X and fraction of cells with
-- X > 0, both over every cell of the type (zeros included).
WITH g AS (SELECT var_id, var_name AS gene FROM atlas.var WHERE var_name IN (${markers})),
     n AS (SELECT cell_type, count(*) AS n_cells FROM atlas.obs GROUP BY cell_type),
     s AS (SELECT o.cell_type, x.var_id, sum(x.value) AS total,
                  count(*) FILTER (WHERE x.value > 0) AS n_pos
           FROM atlas.x x JOIN g USING (var_id) JOIN atlas.obs o USING (obs_id)
           GROUP BY o.cell_type, x.var_id)
SELECT n.cell_type, g.gene,
       coalesce(s.total, 0) / n.n_cells AS mean_x,
       coalesce(s.n_pos, 0) * 1.0 / n.n_cells AS frac_pos
FROM n CROSS JOIN g
LEFT JOIN s ON s.cell_type = n.cell_type AND s.var_id = g.var_id;
