//! Opening a RocksDB store: the options, the process's shared block cache and memtable
//! budget, the checks of the layout marker, and the counters and commit log read back.

use super::*;

/// Block cache and memtable budget shared by every RocksDB store of the process.
struct Shared {
    cache: Cache,
    write_buffers: WriteBufferManager,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn shared(settings: &FintechConfig) -> &'static Shared {
    SHARED.get_or_init(|| {
        let cache = Cache::new_lru_cache(settings.rocksdb_block_cache_bytes);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            settings.rocksdb_write_buffer_bytes,
            false,
            cache.clone(),
        );
        Shared {
            cache,
            write_buffers,
        }
    })
}

pub(super) fn db_error(path: &Path, what: &str, e: rocksdb::Error) -> DataFusionError {
    let msg = e.to_string();
    if msg.contains("lock") || msg.contains("LOCK") {
        DataFusionError::Execution(format!(
            "state directory {} is in use by another process (RocksDB lock held): {msg}",
            path.display()
        ))
    } else if msg.contains("Corruption") {
        DataFusionError::Execution(format!(
            "state directory {} is damaged ({msg}); it was left untouched",
            path.display()
        ))
    } else {
        DataFusionError::Execution(format!("RocksDB at {}: {what}: {msg}", path.display()))
    }
}

fn u32_meta(bytes: Option<Vec<u8>>) -> u32 {
    bytes
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn u64_meta(bytes: Option<Vec<u8>>) -> u64 {
    bytes
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

impl RocksStore {
    /// Opens (or creates) the store at `path`. A directory that holds anything but a
    /// datafusion-fintech store is refused before anything is written to it.
    pub fn open(path: &str, settings: &FintechConfig) -> Result<Self> {
        if path.is_empty() {
            return Err(DataFusionError::Configuration(
                "fintech.state_backend 'rocksdb' needs fintech.state_path: the directory that \
                 holds the state"
                    .into(),
            ));
        }
        let path = PathBuf::from(path);
        let existing = path.is_dir()
            && std::fs::read_dir(&path)
                .map_err(|e| {
                    DataFusionError::Execution(format!("cannot read {}: {e}", path.display()))
                })?
                .next()
                .is_some();
        if path.exists() && !path.is_dir() {
            return Err(DataFusionError::Execution(format!(
                "fintech.state_path {} is a file, not a state directory",
                path.display()
            )));
        }
        if existing {
            if !path.join("CURRENT").is_file() {
                return Err(DataFusionError::Execution(format!(
                    "{} is not a datafusion-fintech state directory (it has files but no \
                     RocksDB database); refusing to write into it",
                    path.display()
                )));
            }
            // Check the marker without writing anything.
            let db = DB::open_for_read_only(&Options::default(), &path, false)
                .map_err(|e| db_error(&path, "open", e))?;
            let format = db
                .get(meta_key("format"))
                .map_err(|e| db_error(&path, "read", e))?;
            match format.as_deref() {
                Some(FORMAT) | Some(FORMAT_1) => {}
                Some(other) => {
                    return Err(DataFusionError::Execution(format!(
                        "state directory {} has layout '{}', this build reads '{}'; nothing \
                         was changed",
                        path.display(),
                        String::from_utf8_lossy(other),
                        String::from_utf8_lossy(FORMAT)
                    )));
                }
                None => {
                    return Err(DataFusionError::Execution(format!(
                        "{} is a RocksDB database that datafusion-fintech did not write; \
                         refusing to use it",
                        path.display()
                    )));
                }
            }
        }

        let shared = shared(settings);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&shared.cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // Filters and indexes in 4 KiB partitions, found through a small top level kept in
        // the cache. A table's whole filter is ~1.2 bytes per key: larger than a shard of the
        // block cache (a 128 MiB cache has 64 shards of 2 MiB) once a table holds a million
        // keys, so it was evicted as soon as it was read and read again, with its checksum,
        // for every batch of reads.
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_block_based_table_factory(&table);
        opts.set_write_buffer_manager(&shared.write_buffers);
        opts.set_write_buffer_size(MEMTABLE_BYTES);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_max_background_jobs(2);
        opts.set_max_open_files(512);
        opts.create_missing_column_families(true);
        // The default column family named, so that `cf_handle` finds it for batched reads,
        // with these options (`DB::open_cf` would give it RocksDB's defaults). The commit log
        // has its own: a log entry is one large value, read once, and a table block that
        // held it and metadata keys would be decompressed whole by every metadata read.
        let mut log_opts = opts.clone();
        log_opts.set_compression_type(DBCompressionType::None);
        let families = [
            ColumnFamilyDescriptor::new(DEFAULT_COLUMN_FAMILY_NAME, opts.clone()),
            ColumnFamilyDescriptor::new(LOG_FAMILY, log_opts),
        ];
        let db = DB::open_cf_descriptors(&opts, &path, families)
            .map_err(|e| db_error(&path, "open", e))?;
        let format = db
            .get(meta_key("format"))
            .map_err(|e| db_error(&path, "read", e))?;
        if format.as_deref() != Some(FORMAT) {
            // Synced: a directory we created must never be left without its marker, and one
            // of layout 1 is marked as layout 2 before it can hold a commit log entry.
            let mut sync = WriteOptions::default();
            sync.set_sync(true);
            db.put_opt(meta_key("format"), FORMAT, &sync)
                .map_err(|e| db_error(&path, "write", e))?;
        }
        let get = |k: &str| db.get(meta_key(k)).map_err(|e| db_error(&path, "read", e));
        let writer = Writer {
            next_state: u32_meta(get("next_state")?),
            next_attempt: u64_meta(get("next_attempt")?),
            pending: HashMap::default(),
        };
        let store = Self {
            path,
            db,
            sync: settings.rocksdb_sync,
            write: Mutex::new(writer),
            log: RwLock::default(),
            commit_log_bytes: settings.rocksdb_commit_log_bytes,
            read_aheads: Mutex::default(),
            filled: Condvar::new(),
            read_ahead_bytes: settings.rocksdb_read_ahead_bytes,
            memtable_bytes: MEMTABLE_BYTES.min(shared.write_buffers.get_buffer_size()),
        };
        // The commit log entries that were not folded before the store closed.
        {
            let mut log = store.log_mut();
            for (k, v) in store.log_entries()? {
                let seq = k
                    .get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or_default();
                log.apply(seq, &v).map_err(|e| {
                    DataFusionError::Execution(format!(
                        "state directory {} is damaged: {e}; it was left untouched",
                        store.path.display()
                    ))
                })?;
            }
        }
        // Scratch pipelines of per-query state that a crashed process left behind.
        for (k, v) in store.scan_prefix(&[PIPELINE])? {
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            if name.starts_with(crate::state::SCRATCH_PREFIX)
                && let Some(attempt) = PipelineMeta::decode(&v).ok().and_then(|m| m.in_flight)
            {
                store.rollback(&name, attempt)?;
            }
        }
        Ok(store)
    }
}
