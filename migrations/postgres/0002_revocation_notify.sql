-- Every revocation record written, by any node, is announced on channel `signet_revocations`
-- (delivered when the writing transaction commits), so that the other nodes sharing this
-- database refuse the token and close its live connections within a second. Payload:
-- {"table": "<table>", "row": {<the row as written>}}.

CREATE FUNCTION signet_notify_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'signet_revocations',
        json_build_object('table', TG_TABLE_NAME, 'row', row_to_json(NEW))::text
    );
    RETURN NEW;
END;
$$;

CREATE TRIGGER denied_tokens_notify AFTER INSERT OR UPDATE ON denied_tokens
    FOR EACH ROW EXECUTE FUNCTION signet_notify_revocation();
CREATE TRIGGER revoked_sessions_notify AFTER INSERT OR UPDATE ON revoked_sessions
    FOR EACH ROW EXECUTE FUNCTION signet_notify_revocation();
CREATE TRIGGER subject_cutoffs_notify AFTER INSERT OR UPDATE ON subject_cutoffs
    FOR EACH ROW EXECUTE FUNCTION signet_notify_revocation();
