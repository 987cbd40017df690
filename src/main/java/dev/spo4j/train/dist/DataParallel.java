package dev.spo4j.train.dist;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.bytedeco.javacpp.chrono.Milliseconds;
import org.bytedeco.pytorch.AllreduceOptions;
import org.bytedeco.pytorch.Backend;
import org.bytedeco.pytorch.BroadcastOptions;
import org.bytedeco.pytorch.ByteVector;
import org.bytedeco.pytorch.GlooDeviceVector;
import org.bytedeco.pytorch.ProcessGroupGloo;
import org.bytedeco.pytorch.ReduceOp;
import org.bytedeco.pytorch.StringVector;
import org.bytedeco.pytorch.TCPStore;
import org.bytedeco.pytorch.TCPStoreOptions;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.Work;
import org.bytedeco.pytorch.global.torch;

/**
 * One data-parallel job on LibTorch's c10d: rendezvous through a {@link TCPStore} that rank 0
 * serves at MASTER_ADDR:MASTER_PORT, then a Gloo process group for CPU tensors (NCCL for CUDA
 * tensors). Every collective runs under the job's timeout, so a peer that never arrives or
 * dies ends each surviving rank with a {@link DistributedException} naming the ranks involved
 * instead of a hang.
 *
 * <p>Gradients are averaged in buckets: consecutive parameters' gradients are copied into flat
 * buffers of about {@link #BUCKET_BYTES} (one per dtype run), each buffer is summed across ranks
 * (all buckets in flight at once), divided by the world size and copied back.
 *
 * <p>Failure naming: before the process group forms, each rank sets {@code arrived/<rank>} in
 * the store; a rank whose collective fails sets {@code failed/<rank>}. The failing rank then
 * lists who never arrived, or who left without reporting (killed or crashed), in its message.
 */
public final class DataParallel implements AutoCloseable {
    /** Bytes per gradient bucket (PyTorch DDP's default bucket_cap_mb is 25). */
    public static final long BUCKET_BYTES = 25L << 20;

    private final DistributedEnv env;
    private final long timeoutMs;
    private final TCPStore store;
    private final Backend group;
    /** Where small collectives (metrics, reference log-probs) run: the CPU for Gloo, this rank's GPU for NCCL. */
    private final org.bytedeco.pytorch.Device device;
    private final List<Bucket> buckets = new ArrayList<>();
    private List<Tensor> bucketParams;

    private record Bucket(Tensor flat, List<Tensor> params, long[] offsets) {}

    /**
     * Joins the job. A CUDA {@code device} (the training device) picks NCCL (the preset's GPU
     * build) instead of Gloo.
     * Throws DistributedException if the peers do not all arrive within {@code timeoutMs}.
     */
    public DataParallel(DistributedEnv env, long timeoutMs, org.bytedeco.pytorch.Device device) {
        boolean cuda = device.is_cuda();
        this.device = device;
        if (!env.isDistributed()) {
            throw new IllegalArgumentException("a data-parallel job needs WORLD_SIZE > 1, got " + env.worldSize());
        }
        this.env = env;
        this.timeoutMs = timeoutMs;
        TCPStoreOptions o = new TCPStoreOptions();
        o.port((short) env.masterPort());  // a Java short carries 1..65535 as the same 16 bits
        o.isServer(env.rank() == 0);
        o.waitWorkers(false);
        o.timeout(new Milliseconds(timeoutMs));
        try {
            store = new TCPStore(env.masterAddr(), o);
        } catch (RuntimeException e) {
            throw new DistributedException("rank " + env.rank() + ": cannot reach the rendezvous store of rank 0 at "
                    + env.masterAddr() + ":" + env.masterPort() + " within " + seconds() + " ("
                    + firstLine(e) + ")", e);
        }
        store.set("arrived/" + env.rank(), bytes("1"));
        try {
            group = cuda ? nccl(store, env, timeoutMs) : gloo(store, env, timeoutMs);
        } catch (RuntimeException e) {
            List<Integer> missing = missing("arrived/");
            throw new DistributedException("rank " + env.rank() + ": rendezvous of " + env.worldSize()
                    + " ranks did not complete within " + seconds()
                    + (missing.isEmpty() ? "" : ": rank" + (missing.size() > 1 ? "s " : " ") + join(missing)
                    + " never arrived") + " (" + firstLine(e) + ")", e);
        }
    }

    private static Backend gloo(TCPStore store, DistributedEnv env, long timeoutMs) {
        ProcessGroupGloo.Options go = ProcessGroupGloo.Options.create(new Milliseconds(timeoutMs));
        String ifname = System.getenv("GLOO_SOCKET_IFNAME");
        String addr = env.masterAddr();
        org.bytedeco.pytorch.gloo.Device device;
        if (ifname != null && !ifname.isBlank()) {
            device = ProcessGroupGloo.createDeviceForInterface(ifname.trim());
        } else if (addr.startsWith("127.") || addr.equals("localhost")) {
            device = ProcessGroupGloo.createDeviceForHostname("127.0.0.1");  // one machine: stay on loopback
        } else {
            device = ProcessGroupGloo.createDefaultDevice();  // this host's name resolved to its address
        }
        go.devices(new GlooDeviceVector(device));
        go.threads(1);  // collectives are issued one thread at a time here; compute keeps the cores
        return new ProcessGroupGloo(store, env.rank(), env.worldSize(), go);
    }

    /** NCCL for CUDA tensors (bytedeco's GPU build, -Pgpu); written to the preset's API, not run on a GPU here. */
    private static Backend nccl(TCPStore store, DistributedEnv env, long timeoutMs) {
        try {
            // the job's timeout, as Gloo's: NCCL's default (10 min) would let its watchdog abort a
            // rank that waits at a barrier while rank 0 writes a large checkpoint
            org.bytedeco.pytorch.nccl.ProcessGroupNCCL.Options no = org.bytedeco.pytorch.nccl.ProcessGroupNCCL.Options
                    .create(false);
            no.timeout(new Milliseconds(timeoutMs));
            return new org.bytedeco.pytorch.nccl.ProcessGroupNCCL(store, env.rank(), env.worldSize(), no);
        } catch (UnsatisfiedLinkError | NoClassDefFoundError e) {
            throw new IllegalStateException("NCCL is not in this LibTorch build (CUDA training needs -Pgpu): " + e, e);
        }
    }

    /** This process's rank, 0 to {@code worldSize() - 1}. */
    public int rank() {
        return env.rank();
    }

    /** The number of processes in the job. */
    public int worldSize() {
        return env.worldSize();
    }

    /**
     * Averages the gradients of {@code params} across ranks, in place. Every gradient must be
     * defined (the trainer defines them once, as zeros). Pass the same list object every step:
     * the buckets are laid out for it once. Returns the wall time in ms.
     */
    public double averageGradients(List<Tensor> params, String when) {
        long t0 = System.nanoTime();
        if (bucketParams != params) {
            buildBuckets(params);
        }
        List<Work> works = new ArrayList<>();
        for (Bucket b : buckets) {
            for (int i = 0; i < b.params.size(); i++) {
                Tensor g = b.params.get(i).grad();
                Tensor slot = b.flat.narrow(0, b.offsets[i], g.numel());
                slot.copy_(g.reshape(-1));
            }
            works.add(group.allreduce(new TensorVector(b.flat), sum()));
        }
        for (Work w : works) {
            await(w, "gradient all-reduce " + when);
        }
        double inv = 1.0 / env.worldSize();
        for (Bucket b : buckets) {
            b.flat.mul_(new org.bytedeco.pytorch.Scalar(inv));
            for (int i = 0; i < b.params.size(); i++) {
                Tensor g = b.params.get(i).grad();
                Tensor slot = b.flat.narrow(0, b.offsets[i], g.numel()).view_as(g);
                g.copy_(slot);
            }
        }
        return (System.nanoTime() - t0) / 1e6;
    }

    private void buildBuckets(List<Tensor> params) {
        for (Bucket b : buckets) {
            b.flat.releaseReference();
        }
        buckets.clear();
        int i = 0;
        while (i < params.size()) {
            Tensor first = params.get(i);
            torch.ScalarType dtype = first.scalar_type().intern();
            List<Tensor> members = new ArrayList<>();
            List<Long> offsets = new ArrayList<>();
            long elems = 0, bytes = 0;
            while (i < params.size() && params.get(i).scalar_type().intern() == dtype
                    && (members.isEmpty() || bytes + params.get(i).nbytes() <= BUCKET_BYTES)) {
                Tensor p = params.get(i);
                members.add(p);
                offsets.add(elems);
                elems += p.numel();
                bytes += p.nbytes();
                i++;
            }
            Tensor flat = torch.zeros(new long[] {elems},
                    new TensorOptions(dtype).device(new org.bytedeco.pytorch.DeviceOptional(first.device())));
            flat.retainReference();  // lives as long as this DataParallel, beyond the caller's step scope
            long[] off = offsets.stream().mapToLong(Long::longValue).toArray();
            buckets.add(new Bucket(flat, members, off));
        }
        bucketParams = params;
    }

    /** Number of gradient buckets (after the first {@link #averageGradients}). */
    public int bucketCount() {
        return buckets.size();
    }

    /** Element-wise sum of {@code values} over all ranks (float64; metrics, reference log-probs). */
    public double[] sum(double[] values, String what) {
        if (values.length == 0) {
            return values;
        }
        Tensor t = onDevice(values);
        await(group.allreduce(new TensorVector(t), sum()), what);
        return fromDevice(t);
    }

    /**
     * Every rank's {@code mine}, by rank, on every rank (a generator state for the checkpoint).
     * The arrays must have one length on every rank: IllegalStateException naming the lengths
     * otherwise. Sent as float64 (exact for bytes) through {@link #sum}, each rank's in its own slot.
     */
    public byte[][] allGather(byte[] mine, String what) {
        int world = worldSize(), me = rank();
        double[] lengths = new double[world];
        lengths[me] = mine.length;
        lengths = sum(lengths, what);
        for (int r = 0; r < world; r++) {
            if (lengths[r] != mine.length) {
                throw new IllegalStateException(what + ": rank " + r + " has " + (long) lengths[r]
                        + " bytes where rank " + me + " has " + mine.length + " (expected one length on every rank)");
            }
        }
        double[] slots = new double[world * mine.length];
        for (int i = 0; i < mine.length; i++) {
            slots[me * mine.length + i] = mine[i];
        }
        slots = sum(slots, what);
        byte[][] out = new byte[world][mine.length];
        for (int r = 0; r < world; r++) {
            for (int i = 0; i < mine.length; i++) {
                out[r][i] = (byte) slots[r * mine.length + i];
            }
        }
        return out;
    }

    /** Rank 0's {@code values} on every rank (the array must have the same length everywhere). */
    public double[] broadcastFromRank0(double[] values, String what) {
        Tensor t = onDevice(values);
        BroadcastOptions o = new BroadcastOptions();
        o.rootRank(0);
        o.timeout(new Milliseconds(timeoutMs));
        await(group.broadcast(new TensorVector(t), o), what);
        return fromDevice(t);
    }

    /** float64 values as a tensor where the backend reduces (NCCL reduces only CUDA tensors). */
    private Tensor onDevice(double[] values) {
        Tensor t = torch.empty(new long[] {values.length}, new TensorOptions(torch.ScalarType.Double), null);
        t.data_ptr_double().put(values);
        return device.is_cuda() ? t.to(device, torch.ScalarType.Double) : t;
    }

    private static double[] fromDevice(Tensor t) {
        Tensor c = t.is_cuda() ? t.cpu() : t;
        double[] out = new double[(int) c.numel()];
        c.data_ptr_double().get(out);
        return out;
    }

    /** Waits until every rank gets here (e.g. while rank 0 writes a checkpoint). */
    public void barrier(String what) {
        org.bytedeco.pytorch.BarrierOptions o = new org.bytedeco.pytorch.BarrierOptions();
        o.timeout(new Milliseconds(timeoutMs));
        await(group.barrier(o), what);
    }

    private AllreduceOptions sum() {
        AllreduceOptions o = new AllreduceOptions();
        o.reduceOp(new ReduceOp(ReduceOp.RedOpType.SUM));  // Gloo has no AVG: sum, then divide
        o.timeout(new Milliseconds(timeoutMs));
        return o;
    }

    private void await(Work w, String what) {
        try {
            w._wait();
        } catch (RuntimeException e) {
            throw failure(what, e);
        }
    }

    /** The exception for a failed collective, naming this rank and the peers that left without a word. */
    private DistributedException failure(String what, RuntimeException e) {
        String msg = "rank " + env.rank() + ": " + what + " failed (" + firstLine(e) + ")";
        try {
            store.set("failed/" + env.rank(), bytes(firstLine(e)));
            List<Integer> silent = missing("failed/");
            if (!silent.isEmpty() && silent.size() < env.worldSize()) {
                msg += "; rank" + (silent.size() > 1 ? "s " : " ") + join(silent)
                        + " reported no error: probably killed or crashed";
            }
        } catch (RuntimeException storeDown) {
            msg += "; the store on rank 0 is unreachable too: rank 0 probably died";
        }
        return new DistributedException(msg, e);
    }

    /** Ranks other than this one without the key {@code prefix + rank} in the store. */
    private List<Integer> missing(String prefix) {
        List<Integer> out = new ArrayList<>();
        for (int r = 0; r < env.worldSize(); r++) {
            if (r != env.rank() && !store.check(new StringVector(prefix + r))) {
                out.add(r);
            }
        }
        return out;
    }

    private String seconds() {
        return (timeoutMs / 1000.0) + " s";
    }

    private static String join(List<Integer> ranks) {
        StringBuilder b = new StringBuilder();
        for (int r : ranks) {
            b.append(b.length() == 0 ? "" : ", ").append(r);
        }
        return b.toString();
    }

    private static ByteVector bytes(String s) {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        ByteVector v = new ByteVector(b.length);
        for (int i = 0; i < b.length; i++) {
            v.put(i, b[i]);
        }
        return v;
    }

    /** The first line of a c10d/Gloo error, without the build machine's source path. */
    static String firstLine(Throwable e) {
        String m = e.getMessage() == null ? e.toString() : e.getMessage();
        int nl = m.indexOf('\n');
        m = (nl >= 0 ? m.substring(0, nl) : m).trim();
        if (m.startsWith("[") && m.indexOf("] ") > 0) {
            m = m.substring(m.indexOf("] ") + 2);
        }
        return m;
    }

    @Override
    public void close() {
        try {
            group.shutdown();
        } catch (RuntimeException ignored) {
            // best effort: the process is ending
        }
    }

    /** A collective or the rendezvous failed; the message names the ranks. */
    public static final class DistributedException extends RuntimeException {
        /** An exception with this message (which names the ranks) and the c10d error behind it. */
        public DistributedException(String message, Throwable cause) {
            super(message, cause);
        }
    }
}
