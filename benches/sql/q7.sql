-- Q7: X value of one gene for every cell of one donor (0 where not stored).
-- The donor's cells become a row selection on X through the inner join (dynamic filter).
WITH cells AS (SELECT obs_id, obs_name FROM atlas.obs WHERE donor_id = ${q7_donor}),
     gene AS (SELECT var_id FROM atlas.var WHERE var_name = ${q7_gene}),
     hits AS (SELECT x.obs_id, x.value FROM atlas.x x JOIN cells USING (obs_id) JOIN gene USING (var_id))
-- The value is widened to DOUBLE so the CSV carries the float32's exact value, as the anchors do.
SELECT c.obs_name AS barcode, CAST(coalesce(h.value, 0) AS DOUBLE) AS value
FROM cells c LEFT JOIN hits h USING (obs_id);
