-- Q2: mean of X for one gene per cell_type, zeros included (sum over stored entries / cells in the group).
WITH hits AS (SELECT x.obs_id, x.value
              FROM atlas.x x JOIN atlas.var v USING (var_id)
              WHERE v.var_name = ${q2_gene})
SELECT o.cell_type, coalesce(sum(h.value), 0) / count(*) AS mean_x
FROM atlas.obs o LEFT JOIN hits h USING (obs_id)
GROUP BY o.cell_type;
