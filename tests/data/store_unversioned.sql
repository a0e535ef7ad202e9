-- A study database as the release before schema versions (issue #22) wrote it: made with that release's
-- kneeage/store.py (sqlite-utils) and dumped with sqlite3's iterdump(). Loaded by tests/test_store.py.
BEGIN TRANSACTION;
CREATE TABLE "audit" (
   "id" INTEGER PRIMARY KEY,
   "study_id" TEXT,
   "ts" TEXT,
   "actor" TEXT,
   "action" TEXT,
   "detail" TEXT
);
INSERT INTO "audit" VALUES(1,'5tudy001','2026-11-28T02:53:08+00:00','pi','create study','legacy study');
INSERT INTO "audit" VALUES(2,'5tudy001','2026-11-28T02:53:08+00:00','pi','invite reader','ABC123');
INSERT INTO "audit" VALUES(3,'5tudy001','2026-11-28T02:53:08+00:00','ABC123','read','position 0 case C2');
CREATE TABLE "cases" (
   "cohort_id" TEXT REFERENCES "cohorts"("id"),
   "case_id" TEXT,
   "row" INTEGER,
   "image" TEXT,
   "image_hash" TEXT,
   "sex" TEXT,
   "chronological_age_months" REAL,
   "reference_bone_age_months" REAL,
   "reference_method" TEXT,
   "reader" TEXT,
   "crop_box" TEXT,
   "extra" TEXT,
   PRIMARY KEY ("cohort_id", "case_id")
);
INSERT INTO "cases" VALUES('c0ffee000001','C1',2,'images/a.dcm','h1','F',100.5,102.0,NULL,NULL,NULL,'{"comparator_fels": 101.0}');
INSERT INTO "cases" VALUES('c0ffee000001','C2',3,'images/b.dcm','h2','M',120.0,118.0,NULL,NULL,NULL,'{"comparator_fels": 119.0}');
INSERT INTO "cases" VALUES('c0ffee000001','C3',4,'images/c.dcm','h3','F',140.25,NULL,NULL,NULL,NULL,'{"comparator_fels": 141.0}');
CREATE TABLE "cohorts" (
   "id" TEXT PRIMARY KEY,
   "name" TEXT,
   "site" TEXT,
   "created" TEXT,
   "source" TEXT,
   "n_cases" INTEGER,
   "identifying_opt_in" INTEGER,
   "assumptions" TEXT
);
INSERT INTO "cohorts" VALUES('c0ffee000001','legacy cohort','Site L','2026-11-28T02:53:08+00:00','folder:/data/legacy',3,0,'["ages in months"]');
CREATE TABLE "login_failures" (
   "id" INTEGER PRIMARY KEY,
   "ts" REAL,
   "scope" TEXT
);
INSERT INTO "login_failures" VALUES(1,1000.0,'reader:ABC123');
INSERT INTO "login_failures" VALUES(2,1000.0,'session:x');
CREATE TABLE "readers" (
   "id" TEXT PRIMARY KEY,
   "study_id" TEXT REFERENCES "studies"("id"),
   "name" TEXT,
   "role" TEXT,
   "code_hash" TEXT,
   "salt" TEXT,
   "created" TEXT,
   "expires" TEXT,
   "revoked" INTEGER
);
INSERT INTO "readers" VALUES('ABC123','5tudy001','Dr Old','reader','0000000000000000000000000000000000000000000000000000000000000000','11111111111111111111111111111111','2026-01-01T00:00:00+00:00','2036-01-01T00:00:00+00:00',0);
CREATE TABLE "reads" (
   "reader_id" TEXT,
   "position" INTEGER,
   "study_id" TEXT,
   "case_id" TEXT,
   "arm" TEXT,
   "repeat" INTEGER,
   "estimate_months" REAL,
   "confidence" INTEGER,
   "unreadable" INTEGER,
   "reason" TEXT,
   "seconds" REAL,
   "shown_model_months" REAL,
   "submitted" TEXT,
   "revision" INTEGER,
   PRIMARY KEY ("reader_id", "position")
);
INSERT INTO "reads" VALUES('ABC123',0,'5tudy001','C2','unassisted',0,117.0,4,0,NULL,12.5,NULL,'2026-01-02T00:00:00+00:00',0);
CREATE TABLE "results" (
   "run_id" TEXT REFERENCES "runs"("id"),
   "case_id" TEXT,
   "status" TEXT,
   "predicted_bone_age_months" REAL,
   "interval_lower" REAL,
   "interval_upper" REAL,
   "fold_values" TEXT,
   "flags" TEXT,
   "error" TEXT,
   "updated" TEXT,
   PRIMARY KEY ("run_id", "case_id")
);
INSERT INTO "results" VALUES('4020fa782acd','C1','done',104.5,90.0,119.0,'[104.0, 105.0]','',NULL,'2026-11-28T02:53:08+00:00');
INSERT INTO "results" VALUES('4020fa782acd','C2','failed',NULL,NULL,NULL,NULL,NULL,'unreadable','2026-11-28T02:53:08+00:00');
CREATE TABLE "runs" (
   "id" TEXT PRIMARY KEY,
   "cohort_id" TEXT REFERENCES "cohorts"("id"),
   "model_name" TEXT,
   "model_hash" TEXT,
   "model_dir" TEXT,
   "synthetic_demo" INTEGER,
   "created" TEXT,
   "finished" TEXT
);
INSERT INTO "runs" VALUES('4020fa782acd','c0ffee000001','demo','abc123','models/demo',1,'2026-11-28T02:53:08+00:00','2026-11-28T02:53:08+00:00');
CREATE TABLE "studies" (
   "id" TEXT PRIMARY KEY,
   "name" TEXT,
   "cohort_id" TEXT,
   "run_id" TEXT,
   "protocol" TEXT,
   "seed" INTEGER,
   "created" TEXT
);
INSERT INTO "studies" VALUES('5tudy001','legacy study','c0ffee000001','4020fa782acd','{"name": "legacy study", "case_ids": ["C1", "C2"]}',7,'2026-01-01T00:00:00+00:00');
CREATE TABLE "worklist" (
   "reader_id" TEXT,
   "position" INTEGER,
   "study_id" TEXT,
   "case_id" TEXT,
   "arm" TEXT,
   "repeat" INTEGER,
   "session" INTEGER,
   PRIMARY KEY ("reader_id", "position")
);
INSERT INTO "worklist" VALUES('ABC123',0,'5tudy001','C2','unassisted',0,0);
INSERT INTO "worklist" VALUES('ABC123',1,'5tudy001','C1','unassisted',0,0);
CREATE INDEX "idx_results_run_id_status"
    ON "results" ("run_id", "status");
CREATE INDEX "idx_login_failures_scope_ts"
    ON "login_failures" ("scope", "ts");
COMMIT;
