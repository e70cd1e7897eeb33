//! Similar completed tasks (R6.1 source 6): the `SimilarityIndex` port and `Bm25Index`, an
//! incremental in-memory BM25 over the goals and specific summaries of DONE records.
//!
//! # Lifecycle
//!
//! The index is never filled by scanning the store during a build (that would make every build
//! O(N)). The owner keeps it current explicitly:
//!
//! - at start-up, [`ContextBuilderService::rebuild_similarity_index`] loads every DONE record once
//!   (or call [`SimilarityIndex::upsert`] for each record yourself);
//! - whenever a record is written, call [`ContextBuilderService::index_record`] (or
//!   `upsert` on the index) with the stored record: DONE records are (re)indexed, others
//!   removed; [`SimilarityIndex::remove`] after a delete.
//!
//! Updates are O(terms of the record × postings touched); a query is bounded by
//! [`Bm25Config::max_postings_per_term`] whatever the corpus size. Because the index may lag the
//! store, the builder re-reads every hit and keeps only records that are DONE in the store.
//! Every change bumps [`SimilarityIndex::generation`], which is part of the built-context cache
//! key, so a cached context never misses a task indexed later.
//!
//! [`ContextBuilderService::rebuild_similarity_index`]: super::ContextBuilderService::rebuild_similarity_index
//! [`ContextBuilderService::index_record`]: super::ContextBuilderService::index_record

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fmt::{self, Debug};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use taskctx_domain::{TaskId, TaskRecord, TaskStatus, is_generic_summary};

use super::memo::Memo;

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarHit {
    /// The similar task.
    pub task_id: TaskId,
    /// Similarity normalised to 0.0–1.0 (1.0: as similar as the query is to itself).
    pub score: f64,
}

/// A similarity index that failed; the builder goes on without similar tasks and warns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("similarity index failed: {0}")]
pub struct SimilarityError(pub String);

/// Finds completed tasks similar to a goal (SPEC R6.1 source 6). Replaceable by an embedding
/// index.
///
/// # Contract
///
/// - `search` returns at most `limit` hits, best first, ties broken by task id, scores in
///   0.0–1.0; the same index state gives the same answer.
/// - `upsert` indexes a DONE record (replacing an earlier version) and removes any other; `remove`
///   forgets a task; `clear` forgets everything. None of them does I/O.
/// - `generation` changes whenever a search answer may change; `None` means "unknown", and
///   contexts that used the index are then not cached.
#[async_trait]
pub trait SimilarityIndex: Send + Sync + Debug + 'static {
    /// The most similar indexed tasks to `query`.
    async fn search(&self, query: &str, limit: usize) -> Result<Vec<SimilarHit>, SimilarityError>;

    /// Indexes `record` if it is DONE, else removes it.
    fn upsert(&self, record: &TaskRecord);

    /// Forgets `task_id`.
    fn remove(&self, task_id: &TaskId);

    /// Forgets everything.
    fn clear(&self);

    /// Changes whenever a search answer may change.
    fn generation(&self) -> Option<u64>;

    /// Indexed tasks.
    fn len(&self) -> usize;

    /// Whether nothing is indexed.
    fn is_empty(&self) -> bool;

    /// A short name for reports.
    fn name(&self) -> &str;
}

/// Parameters of [`Bm25Index`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Bm25Config {
    /// Term-frequency saturation. Default 1.2.
    pub k1: f64,
    /// Length normalisation. Default 0.75.
    pub b: f64,
    /// Terms in more documents than this do not generate candidates (they still score the
    /// candidates found through rarer terms): the bound that keeps a query's cost independent of
    /// the corpus size. When every query term is that common, the newest documents of the
    /// rarest term are the candidates. Default 4096.
    pub max_postings_per_term: usize,
    /// Hits below this normalised score are not returned. Default 0.1.
    pub min_score: f64,
}

impl Default for Bm25Config {
    fn default() -> Self {
        Self {
            k1: 1.2,
            b: 0.75,
            max_postings_per_term: 4096,
            min_score: 0.1,
        }
    }
}

/// Words that carry no meaning for similarity.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "into", "is", "it", "of",
    "on", "or", "that", "the", "this", "to", "with",
];

/// Lower-cased runs of letters and digits, without one-character words and stop words, with a
/// plural `s` removed (`vendors` matches `vendor`; `class` stays): a stemmer in one line.
fn tokenize(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().nth(1).is_some())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(|mut w| {
            if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
                w.pop();
            }
            w
        })
}

/// What a record contributes to the index: its goal and its summary when specific.
fn indexed_text(record: &TaskRecord) -> Option<String> {
    if record.status != TaskStatus::Done {
        return None;
    }
    let mut text = record.goal.clone();
    if let Some(summary) = &record.output_summary
        && !is_generic_summary(summary)
    {
        text.push('\n');
        text.push_str(summary);
    }
    if text.trim().is_empty() {
        None
    } else {
        Some(text)
    }
}

fn fingerprint(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

struct Doc {
    task_id: TaskId,
    fingerprint: u64,
    /// (term id, frequency), sorted by term id.
    terms: Vec<(u32, u32)>,
    len: u32,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    term_ids: HashMap<String, u32>,
    /// Per term id: (doc id, frequency), sorted by doc id (doc ids only grow).
    postings: Vec<Vec<(u32, u32)>>,
    docs: HashMap<u32, Doc>,
    by_task: HashMap<TaskId, u32>,
    next_doc: u32,
    total_len: u64,
}

impl Inner {
    fn remove(&mut self, task_id: &TaskId) -> bool {
        let Some(doc_id) = self.by_task.remove(task_id) else {
            return false;
        };
        if let Some(doc) = self.docs.remove(&doc_id) {
            self.total_len -= u64::from(doc.len);
            for (term, _) in doc.terms {
                if let Some(list) = self.postings.get_mut(term as usize)
                    && let Ok(pos) = list.binary_search_by_key(&doc_id, |(d, _)| *d)
                {
                    list.remove(pos);
                }
            }
        }
        self.generation += 1;
        true
    }

    fn insert(&mut self, task_id: TaskId, text: &str, fingerprint: u64) {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        let mut len = 0u32;
        for word in tokenize(text) {
            let next = self.term_ids.len() as u32;
            let term = *self.term_ids.entry(word).or_insert(next);
            if term as usize == self.postings.len() {
                self.postings.push(Vec::new());
            }
            *counts.entry(term).or_insert(0) += 1;
            len += 1;
        }
        let mut terms: Vec<(u32, u32)> = counts.into_iter().collect();
        terms.sort_unstable();
        let doc_id = self.next_doc;
        self.next_doc += 1;
        for (term, tf) in &terms {
            if let Some(list) = self.postings.get_mut(*term as usize) {
                list.push((doc_id, *tf));
            }
        }
        self.total_len += u64::from(len);
        self.by_task.insert(task_id.clone(), doc_id);
        self.docs.insert(
            doc_id,
            Doc {
                task_id,
                fingerprint,
                terms,
                len,
            },
        );
        self.generation += 1;
    }
}

/// A memoised answer: the index generation it is valid for, and the hits.
type Answer = (u64, Arc<Vec<SimilarHit>>);

/// An in-memory BM25 index over DONE records (goal plus specific summary). Thread-safe; see the
/// module docs for its lifecycle.
pub struct Bm25Index {
    inner: RwLock<Inner>,
    config: Bm25Config,
    /// Answers per (query, limit), valid for one generation: repeated builds of one task do not
    /// search again while nothing changes.
    answers: Memo<(String, usize), Answer>,
}

impl Default for Bm25Index {
    fn default() -> Self {
        Self::new(Bm25Config::default())
    }
}

impl Debug for Bm25Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bm25Index")
            .field("documents", &self.len())
            .field("config", &self.config)
            .finish()
    }
}

impl Bm25Index {
    /// An empty index.
    pub fn new(config: Bm25Config) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            config,
            answers: Memo::new(1024, 16 << 20),
        }
    }

    /// An index of `records` (non-DONE ones are skipped).
    pub fn from_records<'a>(
        config: Bm25Config,
        records: impl IntoIterator<Item = &'a TaskRecord>,
    ) -> Self {
        let index = Self::new(config);
        for record in records {
            index.upsert(record);
        }
        index
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The search itself, without the answer memo.
    fn search_uncached(&self, query: &str, limit: usize) -> Vec<SimilarHit> {
        let inner = self.read();
        let n_docs = inner.docs.len();
        if n_docs == 0 || limit == 0 {
            return Vec::new();
        }
        let mut words: Vec<String> = tokenize(query).collect();
        words.sort_unstable();
        words.dedup();
        if words.is_empty() {
            return Vec::new();
        }
        let n = n_docs as f64;
        let avg_len = (inner.total_len as f64 / n).max(1.0);
        let (k1, b) = (self.config.k1, self.config.b);
        let idf = |df: usize| (1.0 + (n - df as f64 + 0.5) / (df as f64 + 0.5)).ln();
        let weight = |tf: u32, len: u32| {
            let tf = f64::from(tf);
            tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * f64::from(len) / avg_len))
        };
        // The query scored against itself: what a perfect match earns.
        let query_len = words.len() as u32;
        let mut ideal = 0.0;
        // Known terms, rarest first (ties by id): a fixed order, so sums are reproducible.
        let mut known: Vec<(usize, u32, f64)> = Vec::new();
        for word in &words {
            match inner.term_ids.get(word) {
                Some(&term) => {
                    let df = inner.postings.get(term as usize).map_or(0, Vec::len);
                    let w = idf(df);
                    ideal += w * weight(1, query_len);
                    if df > 0 {
                        known.push((df, term, w));
                    }
                }
                None => ideal += idf(0) * weight(1, query_len),
            }
        }
        if known.is_empty() || ideal <= 0.0 {
            return Vec::new();
        }
        known.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let cap = self.config.max_postings_per_term.max(1);
        let mut scores: HashMap<u32, f64> = HashMap::new();
        let rare = known.iter().take_while(|(df, _, _)| *df <= cap).count();
        if rare == 0 {
            // Every term is common: the newest documents of the rarest term are the candidates.
            let (_, term, _) = known[0];
            if let Some(list) = inner.postings.get(term as usize) {
                for (doc, _) in &list[list.len().saturating_sub(cap)..] {
                    scores.insert(*doc, 0.0);
                }
            }
            for (_, term, w) in &known {
                add_by_lookup(&inner, &mut scores, *term, *w, &weight);
            }
        } else {
            for (_, term, w) in &known[..rare] {
                if let Some(list) = inner.postings.get(*term as usize) {
                    for (doc, tf) in list {
                        let len = inner.docs.get(doc).map_or(1, |d| d.len);
                        *scores.entry(*doc).or_insert(0.0) += w * weight(*tf, len);
                    }
                }
            }
            for (_, term, w) in &known[rare..] {
                add_by_lookup(&inner, &mut scores, *term, *w, &weight);
            }
        }
        let mut hits: Vec<SimilarHit> = scores
            .into_iter()
            .filter_map(|(doc, score)| {
                let normalised = (score / ideal).clamp(0.0, 1.0);
                (normalised >= self.config.min_score && normalised > 0.0).then(|| {
                    inner.docs.get(&doc).map(|d| SimilarHit {
                        task_id: d.task_id.clone(),
                        score: normalised,
                    })
                })?
            })
            .collect();
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.task_id.as_str().cmp(b.task_id.as_str()))
        });
        hits.truncate(limit);
        hits
    }
}

/// Adds term `term`'s contribution to every candidate that contains it, by binary search in the
/// candidate's own term list (cost per candidate, not per posting).
fn add_by_lookup(
    inner: &Inner,
    scores: &mut HashMap<u32, f64>,
    term: u32,
    idf: f64,
    weight: &dyn Fn(u32, u32) -> f64,
) {
    for (doc, score) in scores.iter_mut() {
        if let Some(d) = inner.docs.get(doc)
            && let Ok(pos) = d.terms.binary_search_by_key(&term, |(t, _)| *t)
        {
            *score += idf * weight(d.terms[pos].1, d.len);
        }
    }
}

#[async_trait]
impl SimilarityIndex for Bm25Index {
    async fn search(&self, query: &str, limit: usize) -> Result<Vec<SimilarHit>, SimilarityError> {
        let generation = self.read().generation;
        let key = (query.to_string(), limit);
        if let Some((g, hits)) = self.answers.get(&key)
            && g == generation
        {
            return Ok(hits.as_ref().clone());
        }
        let hits = self.search_uncached(query, limit);
        let weight = query.len() + hits.len() * 64 + 64;
        self.answers
            .insert(key, (generation, Arc::new(hits.clone())), weight);
        Ok(hits)
    }

    fn upsert(&self, record: &TaskRecord) {
        let Some(text) = indexed_text(record) else {
            self.remove(&record.task_id);
            return;
        };
        let fp = fingerprint(&text);
        {
            let inner = self.read();
            if let Some(doc) = inner.by_task.get(&record.task_id)
                && inner.docs.get(doc).is_some_and(|d| d.fingerprint == fp)
            {
                return;
            }
        }
        let mut inner = self.write();
        inner.remove(&record.task_id);
        inner.insert(record.task_id.clone(), &text, fp);
    }

    fn remove(&self, task_id: &TaskId) {
        if self.read().by_task.contains_key(task_id) {
            self.write().remove(task_id);
        }
    }

    fn clear(&self) {
        let mut inner = self.write();
        let generation = inner.generation + 1;
        *inner = Inner {
            generation,
            ..Inner::default()
        };
    }

    fn generation(&self) -> Option<u64> {
        Some(self.read().generation)
    }

    fn len(&self) -> usize {
        self.read().docs.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn name(&self) -> &str {
        "bm25"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskctx_domain::TaskType;

    fn done(id: &str, goal: &str) -> TaskRecord {
        let mut r = TaskRecord::new(TaskId::new(id).unwrap(), goal, TaskType::Think);
        r.status = TaskStatus::Done;
        r
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn ranks_by_bm25_and_breaks_ties_by_id() {
        let index = Bm25Index::default();
        index.upsert(&done("a", "solid state battery vendors"));
        index.upsert(&done("b", "battery recycling economics"));
        index.upsert(&done("c", "garden planning"));
        index.upsert(&done("d", "solid state battery vendors"));
        let hits = block_on(index.search("solid state battery vendors", 10)).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.task_id.as_str()).collect();
        assert_eq!(ids[..2], ["a", "d"]);
        assert!(ids.contains(&"b"));
        assert!(!ids.contains(&"c"));
        assert!(hits.iter().all(|h| h.score > 0.0 && h.score <= 1.0));
        assert_eq!(hits[0].score, hits[1].score);
    }

    #[test]
    fn upsert_replaces_and_non_done_records_leave() {
        let index = Bm25Index::default();
        let mut r = done("a", "battery vendors");
        index.upsert(&r);
        let g1 = index.generation();
        index.upsert(&r);
        assert_eq!(
            index.generation(),
            g1,
            "re-indexing the same text changes nothing"
        );
        r.goal = "garden planning".into();
        index.upsert(&r);
        assert!(block_on(index.search("battery", 5)).unwrap().is_empty());
        assert_eq!(block_on(index.search("garden", 5)).unwrap().len(), 1);
        r.status = TaskStatus::Failed;
        index.upsert(&r);
        assert!(index.is_empty());
        index.upsert(&done("b", "x y"));
        index.clear();
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn common_terms_do_not_make_queries_scan_everything() {
        let config = Bm25Config {
            max_postings_per_term: 8,
            ..Bm25Config::default()
        };
        let records: Vec<TaskRecord> = (0..100)
            .map(|i| done(&format!("t{i:03}"), &format!("research topic number{i}")))
            .collect();
        let index = Bm25Index::from_records(config, &records);
        // "research" is in every document; "number42" in one: that one is found and ranked first.
        let hits = block_on(index.search("research number42", 3)).unwrap();
        assert_eq!(hits[0].task_id.as_str(), "t042");
        // Only common terms: candidates are the newest documents of the rarest term.
        let hits = block_on(index.search("research topic", 100)).unwrap();
        assert_eq!(hits.len(), 8);
    }

    #[test]
    fn generic_summaries_are_not_indexed() {
        let mut r = done("a", "plan the work");
        r.output_summary = Some("Generated 4 sub-tasks".into());
        assert_eq!(indexed_text(&r).unwrap(), "plan the work");
        r.output_summary = Some("Found twelve vendors with production lines".into());
        assert!(indexed_text(&r).unwrap().contains("twelve"));
    }
}
