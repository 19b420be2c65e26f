import httpx, json, time
def test_smoke(client, live):
    t=time.time()
    r = client.post("/v1/conversations", json={"persona": "quip"}); print(r.status_code, r.text)
    cid = r.json()["id"]
    with client.stream("POST", f"/v1/conversations/{cid}/messages", json={"text": "What are people saying about the rocket launch?"}) as s:
        print(s.status_code)
        for line in s.iter_lines():
            print(line[:200])
    print(time.time()-t)
    print(client.get(f"/v1/conversations/{cid}").text[:1500])
