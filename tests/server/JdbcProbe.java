import java.sql.*;
import java.util.*;

/** What DBeaver / Metabase / Tableau (all pgJDBC) do: connect, DatabaseMetaData browsing,
 *  PreparedStatement with typed params, fetchSize paging (portal suspension). */
public class JdbcProbe {
    static List<String> out = new ArrayList<>();
    interface Step { Object run() throws Exception; }
    static void check(String name, Step s) {
        try { Object r = s.run(); String t = String.valueOf(r); out.add(name + " | OK | " + (t.length() > 140 ? t.substring(0, 140) : t)); }
        catch (Exception e) { String m = String.valueOf(e.getMessage()).replace('\n', ' '); out.add(name + " | FAIL | " + e.getClass().getSimpleName() + ": " + (m.length() > 220 ? m.substring(0, 220) : m)); }
    }
    static List<String> rows(ResultSet rs, int... cols) throws SQLException {
        List<String> l = new ArrayList<>();
        while (rs.next()) { StringBuilder b = new StringBuilder(); for (int c : cols) b.append(rs.getString(c)).append('/'); l.add(b.toString()); }
        return l;
    }
    public static void main(String[] a) throws Exception {
        String url = a[0], user = a[1], pw = a.length > 2 ? a[2] : "";
        String bigSql = a.length > 3 ? a[3] : "SELECT generate_series(1,5000)";
        Properties p = new Properties(); p.setProperty("user", user); p.setProperty("password", pw);
        p.setProperty("ApplicationName", "jdbc-probe"); p.setProperty("connectTimeout", "10");
        Connection c;
        try { c = DriverManager.getConnection(url, p); } catch (Exception e) { System.out.println("connect | FAIL | " + e); return; }
        out.add("connect | OK | ");
        DatabaseMetaData md = c.getMetaData();
        check("product/version", () -> md.getDatabaseProductName() + " " + md.getDatabaseProductVersion() + " driver " + md.getDriverVersion());
        check("getCatalogs", () -> rows(md.getCatalogs(), 1));
        check("getSchemas", () -> rows(md.getSchemas(), 1));
        check("getTables(pbmc)", () -> rows(md.getTables(null, "pbmc", "%", new String[]{"TABLE", "VIEW"}), 2, 3, 4));
        check("getColumns(pbmc.obs)", () -> rows(md.getColumns(null, "pbmc", "obs", "%"), 4, 6, 5));
        check("getPrimaryKeys(obs)", () -> rows(md.getPrimaryKeys(null, "pbmc", "obs"), 4));
        check("getImportedKeys(obs)", () -> rows(md.getImportedKeys(null, "pbmc", "obs"), 4));
        check("getIndexInfo(obs)", () -> rows(md.getIndexInfo(null, "pbmc", "obs", false, true), 6));
        check("getTypeInfo", () -> rows(md.getTypeInfo(), 1).size());
        check("getFunctions", () -> rows(md.getFunctions(null, "pg_catalog", "abs"), 3).size());
        try (Statement st = c.createStatement()) {
            check("select", () -> rows(st.executeQuery("SELECT obs_name, n_genes FROM pbmc.obs ORDER BY obs_name"), 1, 2));
            check("rs metadata types", () -> { ResultSetMetaData m = st.executeQuery("SELECT * FROM pbmc.obs").getMetaData(); List<String> l = new ArrayList<>(); for (int i = 1; i <= m.getColumnCount(); i++) l.add(m.getColumnName(i) + ":" + m.getColumnTypeName(i)); return l; });
            // PROBE_ERROR_SQL replaces the statement that must fail (run_probes.py sets it to one
            // that succeeds, to show that the check then FAILs).
            String errorSql = System.getenv().getOrDefault("PROBE_ERROR_SQL", "SELECT * FROM nope");
            check("error then reuse", () -> {
                try { st.executeQuery(errorSql); }
                catch (SQLException e) {
                    if (!"42P01".equals(e.getSQLState())) throw new Exception("SQLSTATE " + e.getSQLState() + ", expected 42P01: " + e.getMessage());
                    return e.getSQLState() + " then " + rows(st.executeQuery("SELECT 1"), 1);
                }
                throw new Exception("no error from " + errorSql + " (expected 42P01)");
            });
        }
        check("prepared int", () -> { PreparedStatement ps = c.prepareStatement("SELECT count(*) FROM pbmc.obs WHERE n_genes > ?"); ps.setInt(1, 700); return rows(ps.executeQuery(), 1); });
        check("prepared text", () -> { PreparedStatement ps = c.prepareStatement("SELECT obs_name FROM pbmc.obs WHERE bulk_labels = ?"); ps.setString(1, "CD56+ NK"); return rows(ps.executeQuery(), 1); });
        check("prepared double", () -> { PreparedStatement ps = c.prepareStatement("SELECT count(*) FROM pbmc.obs WHERE n_counts > ?"); ps.setDouble(1, 2000.5); return rows(ps.executeQuery(), 1); });
        check("prepared x6 (server-prepare after 5)", () -> { PreparedStatement ps = c.prepareStatement("SELECT n_genes FROM pbmc.obs WHERE obs_name = ?"); List<String> l = new ArrayList<>(); for (int i = 0; i < 6; i++) { ps.setString(1, "AAACGCACCTATGG-7"); l.addAll(rows(ps.executeQuery(), 1)); } return l; });
        check("prepared timestamp param", () -> { PreparedStatement ps = c.prepareStatement("SELECT ?"); ps.setTimestamp(1, Timestamp.valueOf("2024-01-02 03:04:05")); return rows(ps.executeQuery(), 1); });
        check("fetchSize=100 paging (autocommit off)", () -> { c.setAutoCommit(false); Statement st = c.createStatement(); st.setFetchSize(100); ResultSet rs = st.executeQuery(bigSql); int n = 0; while (rs.next()) n++; c.commit(); c.setAutoCommit(true); return n; });
        check("setReadOnly + isolation", () -> { c.setReadOnly(true); c.setTransactionIsolation(Connection.TRANSACTION_READ_COMMITTED); return c.getTransactionIsolation(); });
        c.close();
        for (String s : out) System.out.println(s);
    }
}
