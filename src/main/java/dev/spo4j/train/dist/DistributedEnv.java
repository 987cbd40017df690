package dev.spo4j.train.dist;

import java.util.Map;

/**
 * Where this process sits in a data-parallel job, read from torchrun's environment:
 * {@code RANK}, {@code WORLD_SIZE}, {@code LOCAL_RANK}, {@code MASTER_ADDR}, {@code MASTER_PORT}.
 * No {@code WORLD_SIZE} (or 1) is a single process: no process group at all.
 *
 * @param rank       RANK, 0 to worldSize - 1
 * @param worldSize  WORLD_SIZE, the number of processes
 * @param localRank  LOCAL_RANK, the rank on this machine (which GPU); RANK when unset
 * @param masterAddr MASTER_ADDR, the host of rank 0's rendezvous store
 * @param masterPort MASTER_PORT, the store's port
 */
public record DistributedEnv(int rank, int worldSize, int localRank, String masterAddr, int masterPort) {
    /** One process on its own: rank 0 of 1, no process group. */
    public static final DistributedEnv SINGLE = new DistributedEnv(0, 1, 0, "127.0.0.1", 0);

    /** This process's place, from its environment variables (see {@link #from}). */
    public static DistributedEnv fromEnvironment() {
        return from(System.getenv());
    }

    /** Throws IllegalArgumentException naming the variable that is missing or malformed. */
    public static DistributedEnv from(Map<String, String> env) {
        String ws = env.get("WORLD_SIZE");
        if (ws == null || ws.isBlank() || ws.trim().equals("1")) {
            return SINGLE;
        }
        int world = number(env, "WORLD_SIZE");
        int rank = number(env, "RANK");
        int local = env.containsKey("LOCAL_RANK") ? number(env, "LOCAL_RANK") : rank;
        String addr = env.get("MASTER_ADDR");
        if (addr == null || addr.isBlank()) {
            throw new IllegalArgumentException("MASTER_ADDR is not set (WORLD_SIZE=" + world
                    + "): the host name or address of rank 0");
        }
        int port = number(env, "MASTER_PORT");
        if (world < 1 || rank < 0 || rank >= world || local < 0 || port < 1 || port > 65535) {
            throw new IllegalArgumentException("RANK=" + rank + ", WORLD_SIZE=" + world + ", LOCAL_RANK=" + local
                    + ", MASTER_PORT=" + port + " (expected 0 <= RANK < WORLD_SIZE, LOCAL_RANK >= 0, a port 1..65535)");
        }
        return new DistributedEnv(rank, world, local, addr.trim(), port);
    }

    /** Whether the job has more than one process. */
    public boolean isDistributed() {
        return worldSize > 1;
    }

    private static int number(Map<String, String> env, String name) {
        String v = env.get(name);
        if (v == null || v.isBlank()) {
            throw new IllegalArgumentException(name + " is not set (needed when WORLD_SIZE > 1)");
        }
        try {
            return Integer.parseInt(v.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(name + "='" + v + "' is not an integer");
        }
    }
}
